"""The client side: resumable downloads of what a chute server (or any HTTP server) offers."""

from chute.client.downloads import DownloadResult, download, filename_from, parse_repr_digest, safe_filename

__all__ = ["DownloadResult", "download", "filename_from", "parse_repr_digest", "safe_filename"]
