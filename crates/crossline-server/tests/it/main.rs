//! Integration tests of the server over real HTTP on loopback. One test binary (faster links,
//! shared helpers); each test starts its own server on port 0.

mod agents;
mod alexa;
mod apns;
mod bots;
mod connections;
mod conversations;
mod destinations;
mod engage;
mod fcm;
mod harness;
mod in_app;
mod ingest;
mod jobs;
mod limits;
mod openapi;
mod profiles;
mod rejected;
mod segment_python;
mod twilio;
mod two_nodes;
mod users;
mod webchat;
mod webhooks;
mod webpush;
