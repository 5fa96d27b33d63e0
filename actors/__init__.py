"""The Ray actors: thin shells that read a snapshot, call a pure decision and carry it out."""

# The folder sits at the repository root but installs as tradetree.actors; loading it
# under a second name would give every class and module-level state two copies.
if __name__ != "tradetree.actors":
    raise ImportError(f"import tradetree.actors, not {__name__}")

# Nothing is imported from here: the tree's child specs name each actor class
# ("tradetree.actors.gateway:VenueGatewayActor") and Ray finds running actors by
# name, so no other package depends on this one's modules.
__all__: list[str] = []
