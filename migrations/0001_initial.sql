-- Responses, their input and output items, and the reasoning indexes replays need.
-- Blobs hold JSON exactly as the API serves it, so a read needs no re-encoding.

CREATE TABLE responses (
    id                   TEXT PRIMARY KEY,
    created_at           INTEGER NOT NULL,          -- unix seconds
    model                TEXT NOT NULL,             -- the client's model name
    status               TEXT NOT NULL,             -- completed | incomplete | failed
    previous_response_id TEXT,                      -- no foreign key: deleting a link is allowed
    retrievable          INTEGER NOT NULL,          -- 0 when the client sent store: false
    session_id           TEXT,                      -- the client's session-id header
    thread_id            TEXT,                      -- the client's thread-id header
    input_tokens         INTEGER NOT NULL DEFAULT 0,
    output_tokens        INTEGER NOT NULL DEFAULT 0,
    request              BLOB NOT NULL,             -- the request body without `input`
    input_items          BLOB NOT NULL,             -- this turn's input items, ids assigned
    output_items         BLOB NOT NULL,             -- the output items (also inside `response`)
    response             BLOB NOT NULL,             -- the response object as served
    size                 INTEGER NOT NULL           -- bytes of the blobs, for retention
);
CREATE INDEX responses_created_at ON responses (created_at);
CREATE INDEX responses_session ON responses (session_id, created_at);
CREATE INDEX responses_thread ON responses (thread_id, created_at);

-- Reasoning text of an assistant turn, found again by any of its tool call ids.
CREATE TABLE reasoning_by_call (
    call_id     TEXT PRIMARY KEY,
    reasoning   TEXT NOT NULL,
    response_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX reasoning_by_call_created_at ON reasoning_by_call (created_at);

-- Reasoning text of an assistant turn, found again by the turn's fingerprint: a hash of
-- its text and tool call ids (bridge.translate.reasoning.turn_fingerprint).
CREATE TABLE reasoning_by_turn (
    fingerprint TEXT PRIMARY KEY,
    reasoning   TEXT NOT NULL,
    response_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX reasoning_by_turn_created_at ON reasoning_by_turn (created_at);
