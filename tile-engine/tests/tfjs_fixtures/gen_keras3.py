# A Keras 3 model saved as `.keras` and converted by the TF.js converter,
# whose weights manifest names variables by position
# (`layers/<layer>/vars/<i>`), with io.json as gen.js writes it but from
# Keras's own predict. Needs tensorflow-cpu 2.21 (Keras 3.15) and
# tensorflowjs 4.22 (not needed to run the tests):
#   python gen_keras3.py   # writes out/keras3/
import os, json, numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras
import tensorflowjs as tfjs
L = keras.layers
rng = np.random.default_rng(11)
x = L.Input((12, 10, 3), name="img")
a = L.Conv2D(8, 3, strides=2, padding="same", name="conv")(x)
a = L.BatchNormalization(center=False, name="bn_scale_only")(a)
a = L.PReLU(shared_axes=[1, 2], name="prelu")(a)
b = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(a)
b = L.BatchNormalization(name="bn")(b)
b = L.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(b)
c = L.Conv2D(6, 1, use_bias=False, name="pointwise_no_bias")(a)
m = L.Add(name="add")([b, c])
t = L.Conv2DTranspose(4, 3, strides=2, padding="same", name="deconv")(m)
model = keras.Model(x, t, name="keras3")
for layer in model.layers:
    ws = layer.get_weights()
    if ws:
        ws = [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ws]
        if isinstance(layer, L.BatchNormalization):
            ws[-1] = np.abs(ws[-1]) + 0.5  # a variance
        layer.set_weights(ws)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "keras3")
os.makedirs(out, exist_ok=True)
model.save(out + "/model.keras")
tfjs.converters.converter.dispatch_keras_keras_to_tfjs_layers_model_conversion(out + "/model.keras", out)
os.remove(out + "/model.keras")
inp = rng.normal(0, 2, (2, 12, 10, 3)).astype(np.float32)
y = model.predict(inp, verbose=0)
json.dump({"input_shape": list(inp.shape), "input": inp.ravel().tolist(),
           "output_shape": list(y.shape), "output": y.ravel().tolist()}, open(out + "/io.json", "w"))
print(y.shape)
