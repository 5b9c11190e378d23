"""The kernel generator: specs, templates, bundles, backends, session chaining and the CLI.

The generator imports the engine's runtime helpers; the engine never imports the generator.
"""
