"""Distillation: a teacher-labelled int8 router model for the terminal, shipped as a signed bundle.

One module per concern (docs/distillation.md): `labels` (the label set and its schema), `teacher`
(labelling through the configured provider, with a cache), `grammar` (synthetic utterances),
`traces` (opt-in utterances from the app database, personal data removed), `dataset` (dedup,
stratified split, card), `features` (hashed n-grams), `train` (numpy, seeded), `quantize` (int8
post-training), `export` (.tflite flatbuffer and the C core's blob), `verify` (tflite-micro,
bit-exact, arena size), `bundle` (signed manifest), `canary` (halt/rollback verdict), `report`,
`pipeline` (the stages in order). numpy, flatbuffers and tflite-micro come from the optional
``distill`` extra and are imported only inside this package, so the host never loads them.
"""
