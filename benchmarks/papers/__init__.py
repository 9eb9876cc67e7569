"""The papers' studies: the CFLVAE's fidelity, training speed, the compression study of the papers' models, and the check of the pipeline's documented figures."""
