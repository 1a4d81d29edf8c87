//! TF.js / Keras layers-model import (model.json + weight shards) into the IR.
