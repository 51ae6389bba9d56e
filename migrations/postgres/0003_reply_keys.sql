-- Rate limits keyed by the address actually mailed *and* by the From
-- address, and per domain (see decide::History).
ALTER TABLE replies ADD COLUMN sender TEXT;
ALTER TABLE replies ADD COLUMN sender_domain TEXT;
ALTER TABLE replies ADD COLUMN recipient_domain TEXT;
CREATE INDEX replies_sender ON replies (sender, template, sent_at);
CREATE INDEX replies_recipient_domain ON replies (recipient_domain, sent_at);
CREATE INDEX replies_sender_domain ON replies (sender_domain, sent_at);
