// openai_client.mjs — the official `openai` npm package against gridq-gateway, for
// tests/test_gateway.c: one chat completion without streaming, one with, each printed as lines
// the test checks ("content: ...", "chunk: ...", "stream done: N chunks").
// Usage: node openai_client.mjs BASE_URL MODEL NODE_DIR   (NODE_DIR holds node_modules/openai)
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [baseURL, model, nodeDir] = process.argv.slice(2);
const require = createRequire(path.join(nodeDir, 'package.json'));
const mod = await import(pathToFileURL(require.resolve('openai')).href);
const OpenAI = mod.OpenAI ?? mod.default?.OpenAI ?? mod.default;

const client = new OpenAI({ baseURL, apiKey: 'x' });
const messages = [{ role: 'user', content: 'alpha beta gamma' }];

const whole = await client.chat.completions.create({ model, messages });
console.log(`object: ${whole.object}`);
console.log(`content: ${whole.choices[0].message.content}`);
console.log(`finish: ${whole.choices[0].finish_reason}`);

const stream = await client.chat.completions.create({ model, messages, stream: true });
let chunks = 0;
let text = '';
for await (const chunk of stream) {
  chunks++;
  const piece = chunk.choices[0]?.delta?.content ?? '';
  text += piece;
  console.log(`chunk: ${JSON.stringify(piece)}`);
}
console.log(`streamed: ${text}`);
console.log(`stream done: ${chunks} chunks`);
