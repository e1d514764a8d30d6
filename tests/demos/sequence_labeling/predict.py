import paddlehub as hub

if __name__ == '__main__':
    split_char = "\002"
    label_list = ["B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "O"]
    text_a = [
        'Angela Merkel visited Paris with the Red Cross'.split(),
        'John lives in New York'.split(),
    ]
    data = [[split_char.join(text)] for text in text_a]
    label_map = {
        idx: label for idx, label in enumerate(label_list)
    }

    model = hub.Module(
        name='bert_cased_L-24_H-1024_A-16',
        task='token-cls',
        load_checkpoint='./checkpoint/best_model/model.pdparams',
        label_map=label_map,
    )

    results = model.predict(data, max_seq_len=50, batch_size=1, use_gpu=False)
    for idx, text in enumerate(text_a):
        print(f'Data: {text} \t Lable: {", ".join(results[idx][1:len(text)+1])}')
