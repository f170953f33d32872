-- The store on PostgreSQL: the same tables as the SQLite migrations 0001-0006 leave, in
-- PostgreSQL's types (bytea for bodies and digests, boolean flags, bigint times). What each
-- table holds is described in the SQLite migrations (migrations/0003, 0004, 0005, 0006).
-- Several bridges may share the database: the migration runner holds an advisory lock, so
-- bridges starting together apply each migration once.

CREATE TABLE responses (
    id                   text PRIMARY KEY,
    created_at           bigint NOT NULL,
    model                text NOT NULL,
    status               text NOT NULL,
    previous_response_id text,
    stored               boolean NOT NULL,
    deleted              boolean NOT NULL DEFAULT false,
    client               text,
    scope                text,
    session_id           text,
    thread_id            text,
    input_tokens         bigint NOT NULL DEFAULT 0,
    output_tokens        bigint NOT NULL DEFAULT 0,
    input_base           text,
    input_offset         integer NOT NULL DEFAULT 0,
    input_count          integer NOT NULL DEFAULT 0,
    input_hash           bytea,
    request              bytea,
    response             bytea,
    tools_hash           bytea
);
CREATE INDEX responses_created_at ON responses (created_at);
CREATE INDEX responses_session ON responses (session_id, created_at);
CREATE INDEX responses_thread ON responses (thread_id, created_at);
CREATE INDEX responses_input_hash ON responses (input_hash) WHERE input_hash IS NOT NULL;
CREATE INDEX responses_input_base ON responses (input_base) WHERE input_base IS NOT NULL;
CREATE INDEX responses_tools ON responses (tools_hash) WHERE tools_hash IS NOT NULL;
CREATE INDEX responses_running ON responses (status) WHERE status IN ('queued', 'in_progress');

CREATE TABLE blobs (
    hash bytea PRIMARY KEY,
    body bytea NOT NULL
);

CREATE TABLE input_items (
    response_id text NOT NULL,
    position    integer NOT NULL,
    item_id     text NOT NULL,
    body        bytea NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE INDEX input_items_item ON input_items (item_id, response_id);

CREATE TABLE output_items (
    item_id     text NOT NULL,
    response_id text NOT NULL,
    position    integer NOT NULL,
    PRIMARY KEY (item_id, response_id)
);
CREATE INDEX output_items_response ON output_items (response_id);

CREATE TABLE reasoning (
    id          bigserial PRIMARY KEY,
    response_id text NOT NULL,
    created_at  bigint NOT NULL,
    text        text NOT NULL,
    details     bytea
);
CREATE INDEX reasoning_response ON reasoning (response_id);
CREATE INDEX reasoning_created_at ON reasoning (created_at);

CREATE TABLE reasoning_keys (
    client       text NOT NULL,
    scope        text NOT NULL,
    kind         text NOT NULL,
    value        text NOT NULL,
    reasoning_id bigint NOT NULL REFERENCES reasoning (id) ON DELETE CASCADE,
    PRIMARY KEY (client, scope, kind, value)
);
CREATE INDEX reasoning_keys_reasoning ON reasoning_keys (reasoning_id);

CREATE TABLE response_events (
    response_id text PRIMARY KEY,
    frames      bytea NOT NULL
);

CREATE TABLE conversations (
    id            text PRIMARY KEY,
    client        text NOT NULL,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL,
    metadata      bytea NOT NULL,
    next_position integer NOT NULL DEFAULT 0
);
CREATE INDEX conversations_updated_at ON conversations (updated_at);

CREATE TABLE conversation_items (
    conversation_id text NOT NULL,
    position        integer NOT NULL,
    item_id         text NOT NULL,
    created_at      bigint NOT NULL,
    body            bytea NOT NULL,
    PRIMARY KEY (conversation_id, position)
);
CREATE UNIQUE INDEX conversation_items_item ON conversation_items (conversation_id, item_id);
