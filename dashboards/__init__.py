"""Dashboards: Panel apps that read the lake only through `store`."""
