-- Anomalies of a control-plane event, e.g. `owner_change_rejected` (a credential event that tried
-- to change its owner: recorded, ignored for attribution) or `api_key_owner_mismatch` (the
-- principal acted with an API key it does not own).
ALTER TABLE control_events ADD COLUMN anomalies Array(String)
