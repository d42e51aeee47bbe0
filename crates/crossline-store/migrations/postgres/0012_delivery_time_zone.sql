-- The customer's time zone decided at planning (a trait, the newest event's `context.timezone`, or
-- the workspace's), so quiet hours are checked again at send time in the same zone.
ALTER TABLE deliveries ADD COLUMN time_zone TEXT;
