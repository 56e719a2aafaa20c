"""
The files provider: share a file or directory, download it from many peers at once.

Content is named by a self-certifying content ID (the hash of its manifest);
every block is checked against its file's Merkle root before it is written.
"""
