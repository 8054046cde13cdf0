"""The ssVAE maths: layers, distributions, flows, the ELBO and rate-distortion models, training and
likelihood evaluation. Nothing here imports the codec or the benchmarks."""
