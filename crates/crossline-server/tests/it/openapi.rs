//! The OpenAPI document: served, current with the committed copy, and every path routed.

use crate::harness::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_current_and_every_path_is_routed() {
    let server = TestServer::start().await;
    let served: Value =
        server.http.get(format!("{}/api/openapi.json", server.url)).send().await.unwrap().json().await.unwrap();
    let generated: Value = serde_json::from_str(&crossline_server::openapi::document_json()).unwrap();
    assert_eq!(served, generated);

    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(committed_path, crossline_server::openapi::document_json() + "\n").unwrap();
    } else {
        let committed: Value = serde_json::from_str(&committed).unwrap_or(Value::Null);
        assert!(
            committed == generated,
            "docs/openapi.json is not the document the code generates: run `UPDATE_OPENAPI=1 cargo test -p crossline-server openapi` and commit it"
        );
    }

    // Every documented operation answers with something other than "no such route".
    let paths = generated["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{} paths", paths.len());
    for (path, operations) in paths {
        let concrete = path.replace("{id}", "prf_x").replace("{kind}", "write");
        for method in operations.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response =
                server.http.request(method.clone(), format!("{}{concrete}", server.url)).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && body.contains("no such endpoint"));
            assert!(!unrouted, "{method} {path} is documented but not routed ({status})");
        }
    }
    let docs = server.http.get(format!("{}/api/docs/", server.url)).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"), "the docs page is served from the binary");
    server.stop().await;
}

/// What an independent reader of the document finds wrong with it; empty when it is valid.
///
/// The document must parse strictly into the `openapiv3` crate's model (the parser behind Rust client
/// generators; utoipa did not write it), and hold what a schema validator does not check: each
/// `{param}` of a path declared `in: path` and each declared path parameter in its path (a query
/// parameter declared as a required path parameter broke every generated client), unique
/// operationIds, 401 documented wherever a credential is required, 500 everywhere, every error
/// answer with the error schema, every `$ref` resolving, and no request body with an empty schema.
/// The structural checks read the JSON itself, so a document the parser rejects still gets every
/// problem listed.
fn problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let raw: Value = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(err) => return vec![format!("not JSON: {err}")],
    };
    if let Err(err) = serde_json::from_str::<openapiv3::OpenAPI>(text) {
        problems.push(format!("not an OpenAPI 3 document (the openapiv3 crate's strict parse): {err}"));
    }
    let Some(paths) = raw["paths"].as_object() else {
        problems.push("no `paths`".into());
        return problems;
    };
    let global_security = raw.get("security");
    let mut operation_ids = std::collections::BTreeMap::<String, String>::new();
    for (path, item) in paths {
        let templated: std::collections::BTreeSet<&str> =
            path.split('{').skip(1).filter_map(|rest| rest.split_once('}')).map(|(name, _)| name).collect();
        let shared_parameters = item["parameters"].as_array().cloned().unwrap_or_default();
        for method in ["get", "put", "post", "delete", "options", "head", "patch", "trace"] {
            let Some(operation) = item.get(method) else { continue };
            let at = format!("{} {path}", method.to_uppercase());
            let mut declared_in_path = std::collections::BTreeSet::new();
            let mut seen = std::collections::BTreeSet::new();
            let own_parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
            for parameter in shared_parameters.iter().chain(&own_parameters) {
                let (Some(name), Some(location)) = (parameter["name"].as_str(), parameter["in"].as_str()) else {
                    problems.push(format!("{at}: a parameter without `name` and `in`: {parameter}"));
                    continue;
                };
                if !seen.insert((name.to_owned(), location.to_owned())) {
                    problems.push(format!("{at}: {location} parameter `{name}` is declared twice"));
                }
                if location == "path" {
                    declared_in_path.insert(name.to_owned());
                    if parameter["required"] != Value::Bool(true) {
                        problems.push(format!("{at}: path parameter `{name}` must be required"));
                    }
                    if !templated.contains(name) {
                        problems.push(format!(
                            "{at}: `{name}` is declared as a path parameter but the path has no {{{name}}} (a query parameter?)"
                        ));
                    }
                }
            }
            for name in &templated {
                if !declared_in_path.contains(*name) {
                    problems.push(format!("{at}: {{{name}}} is in the path but not declared as a path parameter"));
                }
            }
            match operation["operationId"].as_str() {
                None => problems.push(format!("{at}: no operationId")),
                Some(id) => {
                    if let Some(other) = operation_ids.insert(id.to_owned(), at.clone()) {
                        problems.push(format!("{at}: operationId `{id}` is also {other}'s"));
                    }
                }
            }
            let security = operation.get("security").or(global_security);
            let secured = security.and_then(Value::as_array).is_some_and(|requirements| {
                requirements
                    .iter()
                    .any(|requirement| requirement.as_object().is_some_and(|schemes| !schemes.is_empty()))
            });
            let documents = |status: &str| operation["responses"].get(status).is_some();
            if secured && !documents("401") {
                problems.push(format!("{at}: needs a credential but does not document 401"));
            }
            if !documents("500") {
                problems.push(format!("{at}: does not document 500 (any handler can fail)"));
            }
            for (status, response) in operation["responses"].as_object().into_iter().flatten() {
                if status.as_str() < "400" {
                    continue;
                }
                let response = match response["$ref"].as_str() {
                    Some(target) => {
                        target.strip_prefix('#').and_then(|pointer| raw.pointer(pointer)).unwrap_or(&Value::Null)
                    }
                    None => response,
                };
                if response["content"]["application/json"]["schema"]["$ref"] != "#/components/schemas/ErrorBody" {
                    problems.push(format!("{at}: the {status} answer is not the error schema (ErrorBody)"));
                }
            }
            if let Some(content) = operation["requestBody"]["content"].as_object() {
                for (content_type, media) in content {
                    let schema = &media["schema"];
                    if schema.as_object().is_none_or(|schema| schema.is_empty()) {
                        problems.push(format!("{at}: the {content_type} request body has an empty schema"));
                    }
                }
            }
        }
    }
    unresolved_references(&raw, &raw, "#", &mut problems);
    problems
}

/// Every `$ref` under `value` that does not point into `document`.
fn unresolved_references(document: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::String(target)) = fields.get("$ref") {
                let resolved = target.strip_prefix('#').and_then(|pointer| document.pointer(pointer));
                if resolved.is_none() {
                    problems.push(format!("{at}: $ref {target} does not resolve"));
                }
            }
            for (key, child) in fields {
                unresolved_references(document, child, &format!("{at}/{key}"), problems);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                unresolved_references(document, child, &format!("{at}/{index}"), problems);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_served_document_passes_an_independent_validator() {
    let server = TestServer::start().await;
    let response = server.http.get(format!("{}/api/openapi.json", server.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let served = response.text().await.unwrap();
    let problems = problems(&served);
    assert!(problems.is_empty(), "the served OpenAPI document is invalid:\n{}", problems.join("\n"));
    server.stop().await;
}

#[test]
fn openapi_validator_catches_what_broke_clients() {
    // A document with the faults the served one had: a query parameter declared as a required path
    // parameter, a path parameter missing, no 401 on a secured operation, a dangling $ref, a
    // repeated operationId and an empty request body schema.
    let broken = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/bots/{name}": {"get": {
                "operationId": "get_bot",
                "parameters": [{"name": "version", "in": "path", "required": true, "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Missing"}}}},
                              "500": {"description": "failed"}},
                "security": [{"bearer": []}]
            }},
            "/v1/track": {"post": {
                "operationId": "get_bot",
                "requestBody": {"content": {"application/json": {"schema": {}}}},
                "responses": {"200": {"description": "ok"}, "500": {"description": "failed"}}
            }}
        }
    });
    let found = problems(&broken.to_string()).join("\n");
    assert!(!found.contains("not an OpenAPI 3 document"), "the faults are structural, the parse passes:\n{found}");
    for expected in [
        "`version` is declared as a path parameter but the path has no {version}",
        "{name} is in the path but not declared",
        "GET /bots/{name}: needs a credential but does not document 401",
        "$ref #/components/schemas/Missing does not resolve",
        "operationId `get_bot` is also",
        "the application/json request body has an empty schema",
        "GET /bots/{name}: the 500 answer is not the error schema",
    ] {
        assert!(found.contains(expected), "the validator missed: {expected}\nit found:\n{found}");
    }
    assert!(
        problems("{\"openapi\": \"3.1.0\"}").iter().any(|problem| problem.starts_with("not an OpenAPI 3 document"))
    );
    // OpenAPI 3.1's list of types is what the 3.0 model behind client generators cannot read.
    let mut listed_types = broken.clone();
    listed_types["paths"]["/bots/{name}"]["get"]["parameters"][0]["schema"] =
        serde_json::json!({"type": ["integer", "null"]});
    assert!(problems(&listed_types.to_string()).iter().any(|problem| problem.starts_with("not an OpenAPI 3 document")));
}

/// Where a real answer's top-level fields differ from the named schema of the document: a field the
/// schema does not have, or a required one missing. Guards the types that only describe JSON a
/// handler builds by hand (the recognize answer, the Segment calls' `Success`).
fn drift(document: &Value, schema: &str, answer: &Value) -> Vec<String> {
    let schema = &document["components"]["schemas"][schema];
    let properties = schema["properties"].as_object().expect("an object schema");
    let Some(fields) = answer.as_object() else { return vec![format!("not an object: {answer}")] };
    let mut drift: Vec<String> = fields
        .keys()
        .filter(|field| !properties.contains_key(*field))
        .map(|field| format!("undocumented `{field}`"))
        .collect();
    for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !fields.contains_key(required) {
            drift.push(format!("required `{required}` missing"));
        }
    }
    drift
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_answers_have_their_documented_fields() {
    let server = TestServer::start().await;
    let document: Value = serde_json::from_str(&crossline_server::openapi::document_json()).unwrap();
    let ws = server.workspace("documented").await;
    server.put_bot(&ws.api_key, "bank", &crate::bots::bank()).await;
    let mut answers = Vec::new();

    let response = server.track("/v1/track", &ws.write_key, &json!({"userId": "ada", "event": "Signed Up"})).await;
    answers.push(("Success", response.json::<Value>().await.unwrap()));
    let recognized = server
        .http
        .post(format!("{}/api/v1/bots/bank/recognize", server.url))
        .bearer_auth(&ws.api_key)
        .json(&json!({"text": "I lost my card"}))
        .send()
        .await
        .unwrap();
    answers.push(("RecognitionView", recognized.json::<Value>().await.unwrap()));
    let (_, turn) = server
        .converse(
            &ws.api_key,
            &json!({"bot": "bank", "from": {"kind": "user_id", "value": "ada"}, "text": "I lost my card"}),
        )
        .await;
    answers.push(("TurnAnswer", turn));
    let profiles: Value = server.get("/api/v1/profiles", &ws.api_key).await.json().await.unwrap();
    let profile = profiles["profiles"][0].clone();
    let id = profile["id"].as_str().unwrap().to_owned();
    answers.push(("ProfileList", profiles));
    answers.push(("ProfileView", profile));
    let events: Value = server.get(&format!("/api/v1/profiles/{id}/events"), &ws.api_key).await.json().await.unwrap();
    answers.push(("EventView", events["events"][0].clone()));
    answers.push(("EventList", events));
    let bot: Value = server.get("/api/v1/bots/bank", &ws.api_key).await.json().await.unwrap();
    answers.push(("BotView", bot));
    let refused: Value = server.get("/api/v1/profiles/lookup", &ws.api_key).await.json().await.unwrap();
    answers.push(("ErrorBody", refused));

    for (schema, answer) in answers {
        let drift = drift(&document, schema, &answer);
        assert!(drift.is_empty(), "{schema} is not what the server answers: {drift:?}\n{answer}");
    }
    server.stop().await;
}
