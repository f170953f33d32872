-- The provider's structured reasoning (OpenRouter's reasoning_details), as JSON, kept
-- beside the text so a replay can send it back unchanged. NULL where there is none.
ALTER TABLE reasoning_by_call ADD COLUMN details BLOB;
ALTER TABLE reasoning_by_turn ADD COLUMN details BLOB;
