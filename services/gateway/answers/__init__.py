"""Answers the gateway composes itself: verbatim answers made of the retrieved
passages' own sentences, the relevance signal abstention is decided on, and
the choice of answer mode. Kept apart from ask.py so that Ask's other concerns
(conversation history, the generation stream) stay separate."""
