//! ONNX import: protobuf decoding (prost, generated code checked in), op mapping into the IR, constant folding of shape subgraphs.
