// The AI SDK (ai + @ai-sdk/openai, Responses API) against the bridge.
// node ai_sdk.mjs BASE_URL EXPECTED_JSON -> prints one JSON line; exit 1 on a failure.
import { jsonSchema, streamText, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';

const [baseURL, expectedJson] = process.argv.slice(2);
const expected = JSON.parse(expectedJson);
const provider = createOpenAI({ baseURL, apiKey: 'unused' });
const errors = [];
const options = {
  model: provider.responses(expected.model),
  prompt: 'hi',
  maxRetries: 0,
  onError: ({ error }) => errors.push(String(error?.message ?? error)),
};
if (expected.arguments !== undefined) {
  options.tools = {
    get_weather: tool({ inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } } }) }),
  };
}
let text = '';
let args;
try {
  const result = streamText(options);
  for await (const part of result.fullStream) {
    if (part.type === 'error') errors.push(String(part.error?.message ?? part.error));
    if (part.type === 'tool-call') args = JSON.stringify(part.input);
  }
  text = await result.text;
} catch (error) {
  errors.push(String(error));
}
const ok = errors.length === 0
  && (expected.text === undefined || text === expected.text)
  && (expected.arguments === undefined || (args !== undefined && JSON.stringify(JSON.parse(args)) === JSON.stringify(JSON.parse(expected.arguments))));
console.log(JSON.stringify({ mode: 'streamText', ok, errors, text, args }));
process.exit(ok ? 0 : 1);
