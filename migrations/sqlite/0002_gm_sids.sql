-- Sender IDs (RFC 6054) the KS granted each GM, comma-separated: kept so a
-- restarted KS never hands the same SID to a second sender of the group.
ALTER TABLE gms ADD COLUMN sids TEXT NOT NULL DEFAULT '';
