"""What the service keeps and reads: S3 names, the source audio and the clip cache, URL signing, SSM secrets and
the MongoDB episode catalog. Each store is handed its client.

May import only the kernel and itself.
"""
