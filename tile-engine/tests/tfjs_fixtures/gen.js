// Builds tiny TF.js layers models with random weights, saves them as
// layers-model files and records one input/output pair from TF.js itself.
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const tfl = require('@tensorflow/tfjs-layers');
const fs = require('fs');
const path = require('path');

let seed = 12345;
function rnd() { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; }
function randn(n, scale) { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = (rnd() * 2 - 1) * scale; return a; }

function randomize(model) {
  for (const layer of model.layers) {
    const ws = layer.getWeights();
    if (ws.length === 0) continue;
    const names = layer.weights.map(w => w.originalName || w.name);
    const nw = ws.map((w, i) => {
      const n = w.size;
      let d = randn(n, 0.5);
      if (/moving_variance|variance/.test(names[i])) d = d.map(x => 0.5 + Math.abs(x));
      return tf.tensor(d, w.shape);
    });
    layer.setWeights(nw);
  }
}

async function save(model, name, inputShape) {
  randomize(model);
  const dir = path.join(__dirname, 'out', name);
  fs.mkdirSync(dir, { recursive: true });
  await model.save(tf.io.withSaveHandler(async (art) => {
    const json = {
      format: 'layers-model', generatedBy: 'TensorFlow.js tfjs-layers v4.11.0', convertedBy: null,
      modelTopology: art.modelTopology,
      weightsManifest: [{ paths: ['weights.bin'], weights: art.weightSpecs }],
    };
    fs.writeFileSync(path.join(dir, 'model.json'), JSON.stringify(json));
    fs.writeFileSync(path.join(dir, 'weights.bin'), Buffer.from(art.weightData));
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  const n = inputShape.reduce((a, b) => a * b, 1);
  const x = tf.tensor(randn(n, 2.0), inputShape);
  const y = model.predict(x);
  fs.writeFileSync(path.join(dir, 'io.json'), JSON.stringify({
    input_shape: inputShape, input: Array.from(x.dataSync()),
    output_shape: y.shape, output: Array.from(y.dataSync()),
  }));
  console.log(name, 'in', inputShape, 'out', y.shape, 'weights', model.countParams());
}

async function main() {
  await tf.setBackend('cpu');
  // 1. Functional DAG: strided/dilated same/valid convs, depthwise, BN, pooling, merges.
  {
    const inp = tfl.input({ shape: [13, 17, 3], name: 'img' });
    const c1 = tfl.layers.conv2d({ filters: 4, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu', name: 'c1' }).apply(inp);
    const dw = tfl.layers.depthwiseConv2d({ kernelSize: [3, 2], depthMultiplier: 2, padding: 'same', name: 'dw' }).apply(c1);
    const bn = tfl.layers.batchNormalization({ epsilon: 0.01, name: 'bn' }).apply(dw);
    const c2 = tfl.layers.conv2d({ filters: 8, kernelSize: [2, 3], dilationRate: 2, padding: 'same', activation: 'tanh', name: 'c2' }).apply(bn);
    const add = tfl.layers.add({ name: 'add' }).apply([bn, c2]);
    const pr = tfl.layers.prelu({ sharedAxes: [1, 2], name: 'pr' }).apply(add);
    const lr = tfl.layers.leakyReLU({ alpha: 0.2, name: 'lr' }).apply(c2);
    const cat = tfl.layers.concatenate({ axis: -1, name: 'cat' }).apply([pr, lr]);
    const mp = tfl.layers.maxPooling2d({ poolSize: 3, strides: 2, padding: 'same', name: 'mp' }).apply(cat);
    const up = tfl.layers.upSampling2d({ size: [2, 3], name: 'up' }).apply(mp);
    const zp = tfl.layers.zeroPadding2d({ padding: [[1, 0], [0, 2]], name: 'zp' }).apply(up);
    const ap = tfl.layers.averagePooling2d({ poolSize: [3, 2], strides: [2, 1], padding: 'same', name: 'ap' }).apply(zp);
    const cr = tfl.layers.cropping2D({ cropping: [[0, 1], [2, 1]], name: 'cr' }).apply(ap);
    const r6 = tfl.layers.reLU({ maxValue: 6, name: 'r6' }).apply(cr);
    const c3 = tfl.layers.conv2d({ filters: 3, kernelSize: 3, strides: [1, 2], padding: 'valid', activation: 'sigmoid', name: 'c3' }).apply(r6);
    const m = tfl.model({ inputs: inp, outputs: c3, name: 'dag' });
    await save(m, 'dag', [2, 13, 17, 3]);
  }
  // 2. Sequential classifier: conv, pool, flatten (NHWC order), dense, softmax.
  {
    const m = tfl.sequential({ name: 'classifier' });
    m.add(tfl.layers.conv2d({ inputShape: [7, 6, 2], filters: 5, kernelSize: 3, padding: 'valid', activation: 'relu', name: 'conv' }));
    m.add(tfl.layers.maxPooling2d({ poolSize: 2, name: 'pool' }));
    m.add(tfl.layers.flatten({ name: 'flat' }));
    m.add(tfl.layers.dense({ units: 6, activation: 'relu', name: 'fc1' }));
    m.add(tfl.layers.dropout({ rate: 0.5, name: 'drop' }));
    m.add(tfl.layers.dense({ units: 4, activation: 'softmax', name: 'fc2' }));
    await save(m, 'classifier', [3, 7, 6, 2]);
  }
  // 3. Separable conv, global pooling, reshape back to a map, activations.
  {
    const inp = tfl.input({ shape: [8, 8, 4], name: 'x' });
    const s = tfl.layers.separableConv2d({ filters: 6, kernelSize: 3, depthMultiplier: 2, padding: 'same', activation: 'relu', name: 'sep' }).apply(inp);
    const g = tfl.layers.globalAveragePooling2d({ name: 'gap' }).apply(s);
    const gm = tfl.layers.globalMaxPooling2d({ name: 'gmp' }).apply(s);
    const cat = tfl.layers.concatenate({ name: 'cat' }).apply([g, gm]);
    const d = tfl.layers.dense({ units: 12, name: 'fc' }).apply(cat);
    const r = tfl.layers.reshape({ targetShape: [2, 2, 3], name: 'rs' }).apply(d);
    const a = tfl.layers.activation({ activation: 'sigmoid', name: 'act' }).apply(r);
    const f = tfl.layers.flatten({ name: 'flat' }).apply(a);
    const o = tfl.layers.dense({ units: 5, activation: 'softmax', name: 'out' }).apply(f);
    const m = tfl.model({ inputs: inp, outputs: o, name: 'heads' });
    await save(m, 'heads', [2, 8, 8, 4]);
  }
  // 4. UpscalerJS's ESRGAN custom layers (registered as its esrgan models
  //    register them), transposed convs and bilinear up-sampling.
  {
    class MultiplyBeta extends tfl.layers.Layer {
      constructor(config) { super(config || {}); this.beta = 0.2; }
      call(inputs) { return tf.mul(Array.isArray(inputs) ? inputs[0] : inputs, this.beta); }
      getConfig() { return Object.assign({}, super.getConfig(), { beta: this.beta }); }
      static get className() { return 'MultiplyBeta'; }
    }
    class PixelShuffle2x extends tfl.layers.Layer {
      constructor(config) { super(config || {}); this.scale = 2; }
      computeOutputShape(s) { return [s[0], s[1] * 2, s[2] * 2, s[3] / 4]; }
      call(inputs) { return tf.depthToSpace(Array.isArray(inputs) ? inputs[0] : inputs, this.scale, 'NHWC'); }
      getConfig() { return Object.assign({}, super.getConfig(), { scale: this.scale }); }
      static get className() { return 'PixelShuffle2x'; }
    }
    tf.serialization.registerClass(MultiplyBeta);
    tf.serialization.registerClass(PixelShuffle2x);
    const inp = tfl.input({ shape: [6, 7, 3], name: 'lr' });
    const c1 = tfl.layers.conv2d({ filters: 8, kernelSize: 3, padding: 'same', activation: 'relu', name: 'c1' }).apply(inp);
    const t1 = tfl.layers.conv2dTranspose({ filters: 5, kernelSize: 3, strides: 2, padding: 'same', name: 't1' }).apply(c1);
    const t2 = tfl.layers.conv2dTranspose({ filters: 4, kernelSize: [4, 3], strides: 2, padding: 'same', activation: 'relu', name: 't2' }).apply(c1);
    const mb = new MultiplyBeta({ name: 'mb' }).apply(t1);
    const ub = tfl.layers.upSampling2d({ size: [2, 2], interpolation: 'bilinear', name: 'ub' }).apply(c1);
    const cat = tfl.layers.concatenate({ name: 'cat' }).apply([mb, t2, ub]);
    const pre = tfl.layers.conv2d({ filters: 12, kernelSize: 3, padding: 'same', name: 'pre' }).apply(cat);
    const ps = new PixelShuffle2x({ name: 'ps' }).apply(pre);
    const m = tfl.model({ inputs: inp, outputs: ps, name: 'upscaler' });
    await save(m, 'upscaler', [1, 6, 7, 3]);
  }
  // 5. A "valid" transposed conv whose kernel is narrower than its stride,
  //    and bilinear up-sampling by unequal factors.
  {
    const inp = tfl.input({ shape: [5, 4, 2], name: 'x' });
    const t = tfl.layers.conv2dTranspose({ filters: 3, kernelSize: [3, 1], strides: [2, 3], padding: 'valid', name: 't' }).apply(inp);
    const u = tfl.layers.upSampling2d({ size: [3, 2], interpolation: 'bilinear', name: 'u' }).apply(t);
    const m = tfl.model({ inputs: inp, outputs: u, name: 'deconv_valid' });
    await save(m, 'deconv_valid', [2, 5, 4, 2]);
  }
}
main().catch(e => { console.error(e); process.exit(1); });
