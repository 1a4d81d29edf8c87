// Decodes nsfwjs@4.4.0's MobileNetV2 (layers model, uint8-quantised weights)
// into model.json + shard, and records TF.js's outputs on a synthetic image.
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfl = require('@tensorflow/tfjs-layers');
const fs = require('fs');
const src = process.argv[2];
const out = process.argv[3];
async function main() {
  await tf.setBackend('cpu');
  const j = require(src + '/model.min.js');
  const shard = Buffer.from(require(src + '/group1-shard1of1.min.js'), 'base64');
  const weightSpecs = j.weightsManifest[0].weights;
  const json = { format: 'layers-model', generatedBy: 'nsfwjs@4.4.0 dist/models/mobilenet_v2 (decoded)', convertedBy: null,
    modelTopology: j.modelTopology, weightsManifest: [{ paths: ['group1-shard1of1.bin'], weights: weightSpecs }] };
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(out + '/model.json', JSON.stringify(json));
  fs.writeFileSync(out + '/group1-shard1of1.bin', shard);
  const ab = shard.buffer.slice(shard.byteOffset, shard.byteOffset + shard.length);
  const model = await tfl.loadLayersModel(tf.io.fromMemory({ modelTopology: j.modelTopology, weightSpecs, weightData: ab }));
  const hidden = tfl.model({ inputs: model.inputs, outputs: [model.getLayer('dense_2').output, model.outputs[0]] });
  // Synthetic image in nsfwjs's input range [0, 1]: same formula as the Rust test.
  const H = 224, W = 224, d = new Float32Array(H * W * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++)
    d[(y * W + x) * 3 + c] = ((y * 7 + x * 13 + c * 29 + ((x * y) >> 3)) % 256) / 255;
  const [h, p] = hidden.predict(tf.tensor(d, [1, H, W, 3]));
  fs.writeFileSync(out + '/io.json', JSON.stringify({ input: 'pixel (y, x, c) = ((7y + 13x + 29c + (xy >> 3)) mod 256) / 255, NHWC [1, 224, 224, 3]',
    dense_2: Array.from(h.dataSync()), output: Array.from(p.dataSync()) }));
  console.log('dense_2', h.shape, 'probs', Array.from(p.dataSync()));
}
main().catch(e => { console.error(e); process.exit(1); });
