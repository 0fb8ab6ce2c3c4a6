"""Cold start: what `mnemosyne.mnemosyne()` costs in a fresh process beyond `import
jax`."""

from .cold_start import BASELINE, STATEMENT, measure


class ColdStart:
    """A fresh interpreter that imports mnemosyne and builds the pretrained
    optimizer (`benchmarks/cold_start.py` prints the same for two checkouts).
    Target: under 2 s beyond `import jax`."""

    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)
    small = False

    def timeraw_mnemosyne_after_jax(self):
        """asv times the statement in a fresh process; the setup (`import jax`) is not
        timed."""
        return STATEMENT, BASELINE

    def track_beyond_import_jax(self):
        """Median over fresh processes of the statement's wall time minus `import
        jax`'s."""
        row = measure({"this checkout": None}, 1 if self.small else 5)["this checkout"]
        return row["mnemosyne"] - row["jax"]

    track_beyond_import_jax.unit = "seconds"
