"""The generation service: grounded, streamed answers with verified citations."""
