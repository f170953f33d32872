-- Conversation state v2 (bridge.store): reasoning found again only inside its conversation
-- scope; input items stored once per conversation instead of once per turn; store: false
-- keeps no content.
--
-- Converts a version-2 database: every stored response keeps its input items, output and
-- reasoning; store: false responses keep one metadata row (no content); the reasoning index
-- is kept under a legacy client that matches only an exact conversation scope (the
-- thread-id / session-id the turn came with, else its previous_response_id chain).

-- Who may see a response and in which conversation its reasoning is found again.
--   stored:  1 content kept and retrievable (store: true); 0 metadata only (store: false)
--   deleted: 1 a tombstone, kept only while later responses share its input items
--   client:  '' without client keys, else a digest of the key used; NULL: legacy, any client
--   scope:   's:<thread or session id>' or 'r:<id of the previous_response_id chain root>'
-- A response's input is the input of `input_base` (positions 0 .. input_offset - 1) followed
-- by its own rows in input_items (positions input_offset .. input_count - 1): a client that
-- replays the whole conversation stores only what is new since the response it extends.
CREATE TABLE responses_v3 (
    id                   TEXT PRIMARY KEY,
    created_at           INTEGER NOT NULL,
    model                TEXT NOT NULL,
    status               TEXT NOT NULL,
    previous_response_id TEXT,
    stored               INTEGER NOT NULL,
    deleted              INTEGER NOT NULL DEFAULT 0,
    client               TEXT,
    scope                TEXT,
    session_id           TEXT,
    thread_id            TEXT,
    input_tokens         INTEGER NOT NULL DEFAULT 0,
    output_tokens        INTEGER NOT NULL DEFAULT 0,
    input_base           TEXT,
    input_offset         INTEGER NOT NULL DEFAULT 0,
    input_count          INTEGER NOT NULL DEFAULT 0,
    input_hash           BLOB,      -- digest of the whole input, to find the base of a replay
    request              BLOB,      -- the request body without input and tools (stored only)
    response             BLOB,      -- the response object as served, tools left out when
    tools_hash           BLOB       -- they are in `blobs` under this digest
);

-- Large values many responses repeat (the tool list), stored once, by SHA-256 digest.
CREATE TABLE blobs (
    hash BLOB PRIMARY KEY,
    body BLOB NOT NULL
);

-- Input items, each stored once, by the first response whose input holds it.
CREATE TABLE input_items (
    response_id TEXT NOT NULL,
    position    INTEGER NOT NULL,
    item_id     TEXT NOT NULL,
    body        BLOB NOT NULL,      -- the item's JSON as the client sent it
    PRIMARY KEY (response_id, position)
);

-- The reasoning text of an assistant turn, and the keys that find it again. A key names
-- the client and the conversation scope, so nothing matches across clients or scopes:
--   kind 'ctx':  scope '', value: a digest of everything before the turn plus the turn
--   kind 'turn': value: a digest of the turn's text and call ids (turn_fingerprint)
--   kind 'call': value: one of the turn's tool call ids
CREATE TABLE reasoning (
    id          INTEGER PRIMARY KEY,
    response_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    text        TEXT NOT NULL,
    details     BLOB
);
CREATE TABLE reasoning_keys (
    client       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    value        TEXT NOT NULL,
    reasoning_id INTEGER NOT NULL REFERENCES reasoning (id) ON DELETE CASCADE,
    PRIMARY KEY (client, scope, kind, value)
) WITHOUT ROWID;

-- Version 2 data. Chain roots first: the scope of a stored chain without session headers.
CREATE TEMP TABLE legacy_roots AS
WITH RECURSIVE walk(id, at, depth) AS (
    SELECT id, id, 0 FROM responses
    UNION ALL
    SELECT walk.id, r.previous_response_id, walk.depth + 1
    FROM walk JOIN responses r ON r.id = walk.at
    WHERE r.previous_response_id IS NOT NULL AND walk.depth < 100000
)
SELECT id, at AS root, max(depth) AS depth FROM walk GROUP BY id;

INSERT INTO responses_v3 (
    id, created_at, model, status, previous_response_id, stored, client, scope, session_id,
    thread_id, input_tokens, output_tokens, input_count, request, response
)
SELECT
    r.id, r.created_at, r.model, r.status, r.previous_response_id, r.retrievable, NULL,
    CASE
        WHEN coalesce(r.thread_id, r.session_id) IS NOT NULL
            THEN 's:' || coalesce(r.thread_id, r.session_id)
        ELSE 'r:' || (SELECT root FROM legacy_roots WHERE legacy_roots.id = r.id)
    END,
    r.session_id, r.thread_id, r.input_tokens, r.output_tokens,
    CASE WHEN r.retrievable THEN json_array_length(r.input_items) ELSE 0 END,
    CASE WHEN r.retrievable THEN r.request END,
    CASE WHEN r.retrievable THEN r.response END
FROM responses r;

-- Version 2 stored the input items normalized, each with its id.
INSERT INTO input_items (response_id, position, item_id, body)
SELECT r.id, j.key, coalesce(json_extract(j.value, '$.id'), 'item_' || r.id || '_' || j.key),
       j.value
FROM responses r, json_each(r.input_items) j
WHERE r.retrievable;

-- One reasoning row per response (its call and turn rows held the same text).
INSERT INTO reasoning (response_id, created_at, text, details)
SELECT response_id, max(created_at), reasoning, details
FROM (
    SELECT response_id, created_at, reasoning, details FROM reasoning_by_call
    UNION ALL
    SELECT response_id, created_at, reasoning, details FROM reasoning_by_turn
)
GROUP BY response_id;

INSERT OR REPLACE INTO reasoning_keys (client, scope, kind, value, reasoning_id)
SELECT 'legacy', s.scope, 'call', c.call_id, g.id
FROM reasoning_by_call c
JOIN reasoning g ON g.response_id = c.response_id
JOIN responses_v3 s ON s.id = c.response_id;

INSERT OR REPLACE INTO reasoning_keys (client, scope, kind, value, reasoning_id)
SELECT 'legacy', s.scope, 'turn', t.fingerprint, g.id
FROM reasoning_by_turn t
JOIN reasoning g ON g.response_id = t.response_id
JOIN responses_v3 s ON s.id = t.response_id;

-- Version 2 kept one global row per call id, so a turn whose call ids another conversation
-- reused (Kimi's functions.NAME:N) lost its index rows; its response still holds the text.
INSERT INTO reasoning (response_id, created_at, text, details)
SELECT r.id, r.created_at, (
    SELECT group_concat(json_extract(part.value, '$.text'), '')
    FROM json_each(r.response, '$.output') item, json_each(item.value, '$.content') part
    WHERE json_extract(item.value, '$.type') = 'reasoning'
), NULL
FROM responses r
WHERE r.status != 'failed'
  AND NOT EXISTS (SELECT 1 FROM reasoning g WHERE g.response_id = r.id)
  AND EXISTS (
      SELECT 1 FROM json_each(r.response, '$.output') item
      WHERE json_extract(item.value, '$.type') = 'reasoning'
        AND json_array_length(item.value, '$.content') > 0
  )
  AND EXISTS (
      SELECT 1 FROM json_each(r.response, '$.output') item
      WHERE json_extract(item.value, '$.type') IN ('function_call', 'custom_tool_call')
  );

INSERT OR IGNORE INTO reasoning_keys (client, scope, kind, value, reasoning_id)
SELECT 'legacy', s.scope, 'call', json_extract(item.value, '$.call_id'), g.id
FROM reasoning g
JOIN responses r ON r.id = g.response_id
JOIN responses_v3 s ON s.id = g.response_id,
     json_each(r.response, '$.output') item
WHERE json_extract(item.value, '$.type') IN ('function_call', 'custom_tool_call')
  AND g.text != '';

-- Reasoning whose response is gone has no scope left and cannot be offered safely.
DELETE FROM reasoning WHERE id NOT IN (SELECT reasoning_id FROM reasoning_keys);

DROP TABLE legacy_roots;
DROP TABLE reasoning_by_call;
DROP TABLE reasoning_by_turn;
DROP TABLE responses;
ALTER TABLE responses_v3 RENAME TO responses;

CREATE INDEX responses_created_at ON responses (created_at);
CREATE INDEX responses_session ON responses (session_id, created_at);
CREATE INDEX responses_thread ON responses (thread_id, created_at);
CREATE INDEX responses_input_hash ON responses (input_hash) WHERE input_hash IS NOT NULL;
CREATE INDEX responses_input_base ON responses (input_base) WHERE input_base IS NOT NULL;
CREATE INDEX responses_tools ON responses (tools_hash) WHERE tools_hash IS NOT NULL;
CREATE INDEX input_items_item ON input_items (item_id, response_id);
CREATE INDEX reasoning_response ON reasoning (response_id);
CREATE INDEX reasoning_created_at ON reasoning (created_at);
CREATE INDEX reasoning_keys_reasoning ON reasoning_keys (reasoning_id);
