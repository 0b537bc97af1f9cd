"""TFX component code, one folder per pipeline stage."""
