-- The Conversations API: histories kept by the bridge under a conversation id. A request
-- that names a conversation is answered with its items before the request's input, and
-- the turn's input and output are appended to it.
--   client:   whose conversation it is (the client key digest, '' without client keys)
--   metadata: the client's metadata object as JSON
--   next_position: the position the next appended item takes (positions never reused)
CREATE TABLE conversations (
    id            TEXT PRIMARY KEY,
    client        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    metadata      BLOB NOT NULL,
    next_position INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX conversations_updated_at ON conversations (updated_at);

-- Its items in order, each as the API lists it (typed, with its id and status).
CREATE TABLE conversation_items (
    conversation_id TEXT NOT NULL,
    position        INTEGER NOT NULL,
    item_id         TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    body            BLOB NOT NULL,
    PRIMARY KEY (conversation_id, position)
) WITHOUT ROWID;
CREATE UNIQUE INDEX conversation_items_item ON conversation_items (conversation_id, item_id);
