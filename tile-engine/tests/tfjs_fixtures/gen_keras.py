# A Keras 2 (tf_keras) model with bilinear UpSampling2D and a
# Conv2DTranspose, saved by the TF.js converter, with io.json as gen.js
# writes it but from Keras's own predict. Needs tensorflow-cpu 2.15,
# tf_keras and tensorflowjs 4.17 (not needed to run the tests):
#   python gen_keras.py   # writes out/keras_bilinear/
import os, json, numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
import tf_keras as keras
import tensorflowjs as tfjs
L = keras.layers
rng = np.random.default_rng(7)
x = L.Input((5, 6, 2), name="img")
u = L.UpSampling2D((2, 3), interpolation="bilinear", name="up")(x)
t = L.Conv2DTranspose(3, (3, 2), strides=(2, 1), padding="same", dilation_rate=1, name="deconv")(u)
m = keras.Model(x, t, name="keras_bilinear")
for layer in m.layers:
    ws = layer.get_weights()
    if ws:
        layer.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in ws])
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "keras_bilinear")
tfjs.converters.save_keras_model(m, out)
inp = rng.normal(0, 2, (2, 5, 6, 2)).astype(np.float32)
y = m.predict(inp, verbose=0)
json.dump({"input_shape": list(inp.shape), "input": inp.ravel().tolist(),
           "output_shape": list(y.shape), "output": y.ravel().tolist()}, open(out + "/io.json", "w"))
print(y.shape)
