-- The events a background response streamed, kept with it so that a client can follow
-- its stream again from any event (GET /v1/responses/{id}?stream=true&starting_after=N).
-- `frames` holds each event as its server-sent-events frame, in order; deleted with the
-- response.
CREATE TABLE response_events (
    response_id TEXT PRIMARY KEY,
    frames      BLOB NOT NULL
);

-- A process that stops while background responses run leaves them queued or in progress;
-- the next start finds them here and marks them failed.
CREATE INDEX responses_running ON responses (status) WHERE status IN ('queued', 'in_progress');
