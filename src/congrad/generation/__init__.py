"""Text from a policy: batched sampling of responses (:mod:`.sampling`) and the language they are written
in (:mod:`.langid`, py3langid, offline). Used by the self-rewarding loop, the judges and evaluation."""
