// openai-node against the bridge: raw events and the responses.stream() helper.
// node openai_node.mjs BASE_URL EXPECTED_JSON [PACKAGE] -> one JSON line per mode; exit 1 on a
// failure. PACKAGE is the npm name it is installed under (default openai; openai6 for 6.x).
const [baseURL, expectedJson, packageName = 'openai'] = process.argv.slice(2);
const { default: OpenAI } = await import(packageName);
const expected = JSON.parse(expectedJson); // {text, arguments, tools?}
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
const request = { model: expected.model, input: 'hi', tools: expected.tools };
let failed = false;

function outcome(mode, response, error) {
  const call = response?.output?.find((item) => item.type === 'function_call');
  const text = response?.output
    ?.filter((item) => item.type === 'message')
    .flatMap((item) => item.content)
    .map((part) => part.text)
    .join('');
  const ok = !error && response?.status === 'completed'
    && (expected.arguments === undefined || call?.arguments === expected.arguments)
    && (expected.text === undefined || text === expected.text);
  failed ||= !ok;
  console.log(JSON.stringify({ mode, ok, error: error ? String(error) : null, text, args: call?.arguments }));
}

try {
  const stream = await client.responses.create({ ...request, stream: true });
  let final = null;
  for await (const event of stream) if (event.type === 'response.completed') final = event.response;
  outcome('raw', final, null);
} catch (error) {
  outcome('raw', null, error);
}
try {
  const response = await client.responses.stream(request).finalResponse();
  outcome('helper', response, null);
} catch (error) {
  outcome('helper', null, error);
}
process.exit(failed ? 1 : 0);
