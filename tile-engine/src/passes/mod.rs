//! IR rewrite passes: BatchNormalization folded into Conv, Dropout/Identity removal, activation and residual-Add fusion.
