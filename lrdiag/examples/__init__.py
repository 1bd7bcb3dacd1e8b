"""Real example trainers for `lrdiag recommend --trainer`, each with a pathology its sample log shows."""
