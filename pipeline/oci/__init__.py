"""oci capability."""
