"""medsae.labels: the one label vocabulary (``<kind>=<value>`` names and their words) that
evaluate, interpret and retrieval share."""
