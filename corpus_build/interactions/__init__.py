"""Interactions: MovieLens histories (``user_sequences``) and dialogue turns (``conversation_turns``).

One reader per dataset turns its upstream format into rows linked to the corpus by
:class:`corpus_build.linking.Linker`; :mod:`corpus_build.interactions.build` runs them for a profile.
"""
