-- Agents report their membership and ACK health (issue 20, GKM 0.2): the
-- key server they registered with, KEK SPI, SEQs received, accepted and
-- acknowledged, pushes refused, re-registrations and fail-overs, and the
-- dataplane's traffic, as JSON (NULL from older agents); the SEQ they last
-- acknowledged in its own column, compared with the GM database's to find
-- ACKs lost on the way.
ALTER TABLE gm_health ADD COLUMN membership TEXT;
ALTER TABLE gm_health ADD COLUMN acked_seq INTEGER;
