// The AI SDK running a tool loop against the bridge: the model calls a tool, the SDK runs
// it and sends the result back, the model answers. With store on (the SDK's default) the
// SDK sends the earlier steps' items as item references.
// node ai_sdk_tool_loop.mjs BASE_URL MODEL -> prints one JSON line; exit 1 on a failure.
import { generateText, jsonSchema, stepCountIs, tool } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';

const [baseURL, model] = process.argv.slice(2);
const provider = createOpenAI({ baseURL, apiKey: 'unused' });
const errors = [];
let text = '';
try {
  const result = await generateText({
    model: provider.responses(model),
    prompt: 'What is the weather in Oslo?',
    maxRetries: 0,
    stopWhen: stepCountIs(3),
    tools: {
      get_weather: tool({
        inputSchema: jsonSchema({ type: 'object', properties: { city: { type: 'string' } } }),
        execute: async ({ city }) => `cold in ${city}`,
      }),
    },
  });
  text = result.text;
} catch (error) {
  errors.push(String(error?.message ?? error));
}
const ok = errors.length === 0;
console.log(JSON.stringify({ mode: 'generateText', ok, errors, text }));
process.exit(ok ? 0 : 1);
