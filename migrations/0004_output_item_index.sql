-- Output items by id: an `item_reference` in a later request's input finds the item in the
-- response that produced it (the AI SDK sends its history as references by default).
-- Input items are found by their own index (input_items_item).
CREATE TABLE output_items (
    item_id     TEXT NOT NULL,
    response_id TEXT NOT NULL,
    position    INTEGER NOT NULL,   -- the item's index in the response's output
    PRIMARY KEY (item_id, response_id)
) WITHOUT ROWID;
CREATE INDEX output_items_response ON output_items (response_id);

-- Responses stored before this migration.
INSERT OR IGNORE INTO output_items (item_id, response_id, position)
SELECT json_extract(item.value, '$.id'), r.id, item.key
FROM responses AS r, json_each(r.response, '$.output') AS item
WHERE r.stored AND NOT r.deleted AND json_valid(r.response)
  AND json_extract(item.value, '$.id') IS NOT NULL;
