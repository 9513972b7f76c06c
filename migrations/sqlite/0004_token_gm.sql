-- An agent token is bound to the one GM it may report health for
-- (issue 16): its group's identity number and its phase 1 identity.
-- Tokens of other roles leave both empty; an agent token made before
-- this migration is bound by its first accepted report.
ALTER TABLE api_tokens ADD COLUMN gm_group INTEGER;
ALTER TABLE api_tokens ADD COLUMN gm_identity TEXT;
