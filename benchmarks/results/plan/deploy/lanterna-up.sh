lanterna up --endpoint 127.0.0.1:8100 --endpoint 127.0.0.1:8101
