"""The audio engine: MPEG frames, the timeline and the cut (``mp3``), cutting a clip from a source reader, the
FFmpeg adapter, the clip's ID3 attribution, and the pauses in speech that ``snap=pause`` cuts in (``pauses``).
It knows nothing of S3 or HTTP: it takes bytes or readers.

May import only the kernel (``settings``, ``errors``, ``deadlines``) and itself.
"""
