"""The microcontroller target: what TFLite Micro needs to know about a .tflite model.

- `graph`: the flatbuffer read into plain tensors and operators;
- `ops`: the TFLite Micro operator set, and the check that names the layer behind a missing op;
- `arena`: the tensor arena, planned from tensor lifetimes the way TFLite Micro plans it;
- `host`: TFLite Micro's own interpreter on the host (the `tflite-micro` package), where installed;
- `fit`: flash and RAM needed versus available, the latency estimate, and the bundle's summary;
- `csource`: `model_data.h` / `model_data.cc` for the firmware;
- `report`: rich tables of the above for the CLI.
"""
