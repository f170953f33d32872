// Background responses with openai-node: poll, cancel, and resume a stream with the
// responses.stream({response_id, starting_after}) helper.
// node background.mjs BASE_URL MODEL EXPECTED_TEXT [PACKAGE] -> one JSON line per mode;
// exit 1 on a failure.
const [baseURL, model, expectedText, packageName = 'openai'] = process.argv.slice(2);
const { default: OpenAI } = await import(packageName);
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 30000 });
let failed = false;

function report(mode, ok, detail) {
  failed ||= !ok;
  console.log(JSON.stringify({ mode, ok, ...detail }));
}

async function until(id, statuses) {
  for (let tries = 0; tries < 400; tries += 1) {
    const response = await client.responses.retrieve(id);
    if (statuses.includes(response.status)) return response;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`response ${id} never reached ${statuses}`);
}

// 1. Created queued, polled to its end.
try {
  const created = await client.responses.create({ model, input: 'poll me', background: true });
  const final = await until(created.id, ['completed']);
  report('poll', created.status === 'queued' && final.output_text === expectedText, {
    created: created.status,
    text: final.output_text,
  });
} catch (error) {
  report('poll', false, { error: String(error) });
}

// 2. A stream dropped after a few events, resumed with the helper from where it was.
try {
  const stream = await client.responses.create({
    model, input: 'stream me', background: true, stream: true,
  });
  const seen = [];
  for await (const event of stream) {
    seen.push(event);
    if (seen.length === 5) break;
  }
  const id = seen[0].response.id;
  const after = seen[seen.length - 1].sequence_number;
  const resumed = client.responses.stream({ response_id: id, starting_after: after });
  const rest = [];
  for await (const event of resumed) rest.push(event);
  const final = await resumed.finalResponse();
  const numbers = [...seen, ...rest].map((event) => event.sequence_number);
  const inOrder = numbers.every((number, index) => number === index);
  report('resume', inOrder && final.output_text === expectedText, {
    first: rest[0]?.sequence_number,
    text: final.output_text,
  });
} catch (error) {
  report('resume', false, { error: String(error) });
}

// 3. Cancelled while it runs.
try {
  const created = await client.responses.create({ model, input: 'cancel me', background: true });
  await until(created.id, ['in_progress']);
  const cancelled = await client.responses.cancel(created.id);
  const after = await client.responses.retrieve(created.id);
  report('cancel', cancelled.status === 'cancelled' && after.status === 'cancelled', {
    status: after.status,
  });
} catch (error) {
  report('cancel', false, { error: String(error) });
}
process.exit(failed ? 1 : 0);
