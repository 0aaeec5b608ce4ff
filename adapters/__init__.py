"""Scene adapters for idcode terminals (installed as ``idcode_adapters``)."""
