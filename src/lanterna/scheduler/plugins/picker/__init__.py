"""picker."""
