"""HTTP surface: one WSGI dispatcher (werkzeug Map) serving the proxy, the admin API, health and the console."""
