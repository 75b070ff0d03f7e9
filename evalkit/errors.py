"""The one exception users see: a problem in their input, phrased with its fix."""


class EvalkitError(Exception):
    """Bad input or environment. The CLI prints the message on one line and exits 2."""
