// A stored response read back as a stream with openai-node's helper:
// node stream_stored.mjs BASE_URL RESPONSE_ID [PACKAGE] -> one JSON line: the event types,
// the helper's final response (or the error); exit 1 on an error.
const [baseURL, responseId, packageName = 'openai'] = process.argv.slice(2);
const { default: OpenAI } = await import(packageName);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
try {
  const stream = client.responses.stream({ response_id: responseId });
  const types = [];
  for await (const event of stream) types.push(event.type);
  const final = await stream.finalResponse();
  console.log(JSON.stringify({ types, final, text: final.output_text }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error) }));
  process.exit(1);
}
