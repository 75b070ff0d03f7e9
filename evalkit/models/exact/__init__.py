"""The exact models shipped as builtin:mixture (DDPM family) and builtin:mixture-flow (rectified flow).

The data distribution is an isotropic Gaussian mixture in pixel space ([-1, 1], shape 3xHxW)
around K = 20 procedurally drawn prototype images (faces, animals, landscapes, words, counts,
textures, abstract shapes), each tied to a caption. Because the noisy marginals of a Gaussian
mixture are known in closed form, the denoiser is exact: every error in a sampled image is the
scheduler's, and the probability-flow ODE can be solved to high accuracy (`ground_truth`).

  schedule        the shipped scheduler configs; timestep -> sigma for the DDPM-family model
  drawings        how each prototype picture is drawn
  prototypes      the prototypes (captions, keywords, images): the components' means
  components      the prompt -> components rule (the models' "text encoder")
  denoiser        the closed-form denoiser D(x, sigma) and the eps network (builtin:mixture)
  flow_velocity   the closed-form velocity and the FLUX-style transformer (builtin:mixture-flow)
  packing         FLUX's 2x2 patch tokens, for the flow model
  pipeline_io     what both pipelines share: call checks, guidance input, output types
  pipeline        builtin:mixture's pipeline and ground truth
  flow_pipeline   builtin:mixture-flow's pipeline and ground truth

Nothing is imported here: evalkit.models.builtin imports a pipeline module only when its model is asked for.
"""
