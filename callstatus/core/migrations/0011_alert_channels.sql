-- alert_channels: the channels of the rules file as loaded at the server's start (name and
-- type; never the URL or secret), replaced at each start, so the Alerts page offers every
-- channel for a test message, those only reports use included.
CREATE TABLE alert_channels (
    channel    VARCHAR NOT NULL,
    type       VARCHAR NOT NULL,  -- slack | email | webhook
    loaded_at  TIMESTAMPTZ NOT NULL
);
