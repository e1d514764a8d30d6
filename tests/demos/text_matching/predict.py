import paddlehub as hub

if __name__ == '__main__':
    data = [
        ['What is this expression called', 'What is the cat expression called'],
        ['What is a smart band', 'What is a smart band good for'],
        ['How do I train a dog', 'How old is the moon'],
    ]
    label_map = {0: 'similar', 1: 'dissimilar'}

    model = hub.Module(
        name='bert_cased_L-24_H-1024_A-16',
        task='text-matching',
        load_checkpoint='./checkpoint/best_model/model.pdparams',
        label_map=label_map)
    results = model.predict(data, max_seq_len=128, batch_size=1, use_gpu=False)
    for idx, texts in enumerate(data):
        print('TextA: {}\tTextB: {}\t Label: {}'.format(texts[0], texts[1], results[idx]))
