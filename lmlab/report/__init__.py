"""Tables and plots built from run dirs."""
