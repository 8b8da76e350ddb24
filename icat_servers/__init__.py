"""icat-servers: the MetaExperiment and MetadataManager Tango device servers.

One import name for the design's three folders, which stay at the top of the repository:
`icat_servers.statecharts` (the behaviour), `icat_servers.icatcore` (the domain, no I/O) and
`icat_servers.adapters` (Tango, delivery, the embedded stack, the CLI). In a checkout they
are symbolic links to those folders; the wheel holds them as plain packages, with the
example registration in `icat_servers/examples/`.
"""
